"""A stand-in kubelet: a real gRPC server on a Unix socket serving PodResourcesLister v1 `List`.

Messages are encoded here from the field numbers of the published api.proto
(k8s.io/kubelet/pkg/apis/podresources/v1), independently of infermeter's decoder:
ListPodResourcesResponse{repeated PodResources pod_resources = 1}
PodResources{string name = 1; string namespace = 2; repeated ContainerResources containers = 3}
ContainerResources{string name = 1; repeated ContainerDevices devices = 2; repeated int64
cpu_ids = 3}
ContainerDevices{string resource_name = 1; repeated string device_ids = 2; TopologyInfo
topology = 3}; TopologyInfo{repeated NUMANode nodes = 1}; NUMANode{int64 ID = 1}
The extra fields (cpu_ids, topology) are sent too, as a real kubelet does, and must be skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

LIST = "/v1.PodResourcesLister/List"
# pod -> (namespace, {container: [(resource, [device ids])]})
PodSpec = tuple[str, str, dict[str, list[tuple[str, list[str]]]]]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def encode(pods: list[PodSpec]) -> bytes:
    """A ListPodResourcesResponse."""
    out = b""
    for namespace, name, containers in pods:
        pod = _len_field(1, name.encode()) + _len_field(2, namespace.encode())
        for container_name, devices in containers.items():
            container = _len_field(1, container_name.encode())
            for resource, ids in devices:
                numa = _len_field(1, _len_field(1, _varint_field(1, 0)))  # topology{nodes{ID 0}}
                entry = _len_field(1, resource.encode())
                entry += b"".join(_len_field(2, i.encode()) for i in ids) + _len_field(3, numa)
                container += _len_field(2, entry)
            container += _varint_field(3, 4)  # cpu_ids: 4
            pod += _len_field(3, container)
        out += _len_field(1, pod)
    return out


@dataclass
class FakeKubelet:
    """What `List` answers; tests change it while the server runs."""

    pods: list[PodSpec] = field(default_factory=list)
    delay: float = 0.0
    garbage: bytes | None = None
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: bytes, context: Any) -> bytes:
        with self.lock:
            self.calls += 1
            delay, garbage, pods = self.delay, self.garbage, list(self.pods)
        if delay:
            time.sleep(delay)
        return garbage if garbage is not None else encode(pods)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    def service(self, handler_call_details: Any) -> Any:
        if handler_call_details.method != LIST:
            return None
        return grpc.unary_unary_rpc_method_handler(self.kubelet.answer)  # raw bytes both ways


@contextmanager
def fake_kubelet(socket_path: Path, kubelet: FakeKubelet) -> Iterator[FakeKubelet]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_Handler(kubelet),))
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    try:
        yield kubelet
    finally:
        server.stop(grace=None)
        socket_path.unlink(missing_ok=True)
