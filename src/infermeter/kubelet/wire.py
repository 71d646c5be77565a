"""Decoding the kubelet's `ListPodResourcesResponse` (podresources v1) from protobuf bytes.

Pure. Four messages are read, by the field numbers of the published api.proto
(k8s.io/kubelet/pkg/apis/podresources/v1): ListPodResourcesResponse{pod_resources=1},
PodResources{name=1, namespace=2, containers=3}, ContainerResources{name=1, devices=2},
ContainerDevices{resource_name=1, device_ids=2}. Every other field is skipped, so newer
kubelets (cpu_ids, memory, dynamic_resources, topology) decode the same. A hand decoder of
this size is simpler than generated code and a protobuf runtime dependency.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a ListPodResourcesResponse."""


@dataclass(frozen=True, slots=True)
class Devices:
    resource_name: str
    device_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    devices: tuple[Devices, ...]


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    containers: tuple[Container, ...]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of every length-delimited field; other wire types skipped."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == _VARINT:
            _, pos = _varint(buf, pos)
        elif wire_type == _I64:
            pos += 8
        elif wire_type == _I32:
            pos += 4
        elif wire_type == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise WireError("truncated field")
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise WireError(f"unknown wire type {wire_type}")
        if pos > len(buf):
            raise WireError("truncated field")


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError("string is not UTF-8") from exc


def _devices(buf: bytes) -> Devices:
    resource, ids = "", []
    for number, raw in _fields(buf):
        if number == 1:
            resource = _text(raw)
        elif number == 2:
            ids.append(_text(raw))
    return Devices(resource, tuple(ids))


def _container(buf: bytes) -> Container:
    name, devices = "", []
    for number, raw in _fields(buf):
        if number == 1:
            name = _text(raw)
        elif number == 2:
            devices.append(_devices(raw))
    return Container(name, tuple(devices))


def _pod(buf: bytes) -> Pod:
    name, namespace, containers = "", "", []
    for number, raw in _fields(buf):
        if number == 1:
            name = _text(raw)
        elif number == 2:
            namespace = _text(raw)
        elif number == 3:
            containers.append(_container(raw))
    if not name or not namespace:
        raise WireError("pod without a name or namespace")
    return Pod(namespace, name, tuple(containers))


def decode_list_response(buf: bytes) -> tuple[Pod, ...]:
    """Every pod in a List answer; WireError when the bytes are not one."""
    return tuple(_pod(raw) for number, raw in _fields(buf) if number == 1)
