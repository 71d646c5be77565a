"""The pod-resources answer decoder and the device-to-container mapping (pure code)."""

from __future__ import annotations

import pytest

from harness.kubelet_server import encode
from infermeter.gpu.model import PodRef
from infermeter.kubelet.attribution import attribute
from infermeter.kubelet.wire import Container, Devices, Pod, WireError, decode_list_response

GPU0 = "GPU-00000000-1111-2222-3333-000000000000"
GPU1 = "GPU-00000001-1111-2222-3333-000000000001"
MIG = "MIG-00000001-aaaa-bbbb-cccc-000000000000"


def test_decodes_what_the_published_field_numbers_encode() -> None:
    raw = encode(
        [
            ("ml", "train-0", {"main": [("nvidia.com/gpu", [GPU0, GPU1])], "side": []}),
            ("web", "api-0", {"app": [("example.com/foo", ["x"])]}),
        ]
    )
    assert decode_list_response(raw) == (
        Pod(
            "ml",
            "train-0",
            (
                Container("main", (Devices("nvidia.com/gpu", (GPU0, GPU1)),)),
                Container("side", ()),
            ),
        ),
        Pod("web", "api-0", (Container("app", (Devices("example.com/foo", ("x",)),)),)),
    )
    assert decode_list_response(b"") == ()  # no pods on the node


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x0a\xff",  # field 1, length past the end
        b"\x0a\x02\x0a",  # a pod whose inner field is cut
        b"\x0f",  # wire type 7
        b"\x80" * 12,  # endless varint
        b"HTTP/1.1 200 OK\r\n",  # not protobuf at all
        encode([("", "nameless", {})]),  # a pod without a namespace
    ],
)
def test_garbage_is_an_error_not_a_crash(garbage: bytes) -> None:
    with pytest.raises(WireError):
        decode_list_response(garbage)


def test_attribution_by_uuid_mig_containers_and_time_slicing() -> None:
    pods = decode_list_response(
        encode(
            [
                ("ml", "train-0", {"a": [("nvidia.com/gpu", [GPU0])], "b": []}),
                ("ml", "infer-0", {"c": [("nvidia.com/mig-1g.10gb", [MIG])]}),
                ("x", "share-0", {"d": [("nvidia.com/gpu", [f"{GPU1}::0"])]}),
                ("x", "share-1", {"e": [("nvidia.com/gpu", [f"{GPU1}::1"])]}),
                ("x", "other", {"f": [("example.com/fpga", [GPU0])]}),
            ]
        )
    )
    found = attribute(pods)
    assert found.sole(GPU0) == PodRef("ml", "train-0", "a")
    assert found.sole(MIG) == PodRef("ml", "infer-0", "c")
    assert found.sole(GPU1) is None  # shared: no one pod's value
    assert found.holders[GPU1] == (PodRef("x", "share-0", "d"), PodRef("x", "share-1", "e"))
    assert found.sole("GPU-unheld") is None
    assert set(found.holders) == {GPU0, GPU1, MIG}
