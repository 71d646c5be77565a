"""The official openai client through the real sidecar, in front of the demo upstream."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from harness.inprocess import run_inprocess
from harness.sidecar import SidecarClient, demo_upstream, value

if TYPE_CHECKING:
    import openai

pytestmark = pytest.mark.e2e
FAST = {"x-demo-ttft": "0.01", "x-demo-itl": "0.002"}
MESSAGES = [{"role": "user", "content": "canary-prompt-7f3a"}]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[openai.OpenAI, SidecarClient]]:
    import openai  # here, not at the top: importing it costs every xdist worker's collection

    tmp = tmp_path_factory.mktemp("openai")
    with (
        demo_upstream(tmp) as upstream,
        run_inprocess(tmp, "--no-gpu-metrics", upstream=upstream) as sidecar,
    ):
        client = openai.OpenAI(
            api_key="sk-test", base_url=sidecar.proxy_url + "/v1", default_headers=FAST
        )
        yield client, sidecar
        client.close()


def test_chat_streaming_with_usage(rig: tuple[openai.OpenAI, SidecarClient]) -> None:
    client, sidecar = rig
    stream = client.chat.completions.create(
        model="chat-usage",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        max_tokens=7,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    usage = chunks[-1].usage
    assert len(content) == 7
    assert usage is not None
    assert usage.completion_tokens == 7
    text = sidecar.wait_metric("infermeter_requests_total", 1.0, model="chat-usage", code="200")
    labels = {"model": "chat-usage", "api": "chat_completions"}
    assert value(text, "infermeter_time_to_first_token_seconds_count", **labels) == 1.0
    assert value(text, "infermeter_inter_token_latency_seconds_count", **labels) == 6.0
    assert value(text, "infermeter_time_per_output_token_seconds_count", **labels) == 1.0
    assert value(text, "infermeter_completion_tokens_total", **labels) == 7.0
    assert value(text, "infermeter_prompt_tokens_total", **labels) == float(usage.prompt_tokens)
    assert value(text, "infermeter_completion_tokens_estimated_total", **labels) is None
    assert "canary-prompt-7f3a" not in text
    assert "canary-prompt-7f3a" not in sidecar.log()
    lag = value(text, "infermeter_event_loop_lag_seconds_count")
    assert lag is not None
    assert lag > 0


def test_chat_streaming_without_usage_is_estimated(
    rig: tuple[openai.OpenAI, SidecarClient],
) -> None:
    client, sidecar = rig
    chunks = list(
        client.chat.completions.create(
            model="chat-est",
            messages=MESSAGES,
            stream=True,
            max_tokens=5,  # type: ignore[arg-type]
        )
    )
    assert all(c.usage is None for c in chunks)
    text = sidecar.wait_metric("infermeter_requests_total", 1.0, model="chat-est", code="200")
    assert value(text, "infermeter_completion_tokens_estimated_total", model="chat-est") == 5.0
    assert value(text, "infermeter_completion_tokens_total", model="chat-est") is None
    assert value(text, "infermeter_request_errors_total", model="chat-est") is None


def test_chat_non_streaming(rig: tuple[openai.OpenAI, SidecarClient]) -> None:
    client, sidecar = rig
    reply = client.chat.completions.create(
        model="chat-full",
        messages=MESSAGES,
        max_tokens=4,  # type: ignore[arg-type]
    )
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 4
    text = sidecar.wait_metric("infermeter_requests_total", 1.0, model="chat-full", code="200")
    assert value(text, "infermeter_time_to_first_token_seconds_count", model="chat-full") is None
    assert value(text, "infermeter_request_duration_seconds_count", model="chat-full") == 1.0
    assert value(text, "infermeter_completion_tokens_total", model="chat-full") == 4.0


@pytest.mark.parametrize("usage", [True, False])
def test_completions_streaming(rig: tuple[openai.OpenAI, SidecarClient], usage: bool) -> None:
    client, sidecar = rig
    model = f"cmpl-{usage}"
    options = {"stream_options": {"include_usage": True}} if usage else {}
    chunks = list(
        client.completions.create(model=model, prompt="p", stream=True, max_tokens=6, **options)  # type: ignore[call-overload]
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) == 6
    text = sidecar.wait_metric("infermeter_requests_total", 1.0, model=model, code="200")
    assert value(text, "infermeter_time_to_first_token_seconds_count", model=model) == 1.0
    counted = (
        "infermeter_completion_tokens_total"
        if usage
        else ("infermeter_completion_tokens_estimated_total")
    )
    assert value(text, counted, model=model) == 6.0


def test_completions_non_streaming(rig: tuple[openai.OpenAI, SidecarClient]) -> None:
    client, sidecar = rig
    reply = client.completions.create(model="cmpl-full", prompt="p", max_tokens=3)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 3
    text = sidecar.wait_metric("infermeter_requests_total", 1.0, model="cmpl-full", code="200")
    assert value(text, "infermeter_completion_tokens_total", model="cmpl-full") == 3.0
    assert value(text, "infermeter_goodput_requests_total", model="cmpl-full") == 1.0
