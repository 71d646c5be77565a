"""What the proxy needs to know from a request body: model, streaming, usage option, n.

The body may be cut at a cap by the caller. When it is not complete JSON, a bounded regex
scan of its head still finds ``"model"`` and ``"stream"`` (they are almost always near the
top). Never raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from infermeter.sanitize import clean_text
from infermeter.streams.api import Api

#: How much of a body that is not valid JSON the fallback scan looks at.
SCAN_LIMIT = 64 * 1024
#: Longest model name kept (it becomes a span attribute and, cut further, a label value).
MODEL_LIMIT = 512

# `"model"` as a key: not preceded by a backslash, so an escaped quote inside a string
# value (`\"model\"`) does not match. Model names with escapes are not recovered.
_MODEL_RE = re.compile(rb'(?<!\\)"model"\s*:\s*"([^"\\]{1,512})"')
_STREAM_RE = re.compile(rb'(?<!\\)"stream"\s*:\s*(true|false)\b')


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Request facts used for labels and for choosing a parser."""

    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    n: int = 1


def _default_stream(api: Api, path: str) -> bool:
    if api in (Api.OLLAMA_GENERATE, Api.OLLAMA_CHAT):
        return True  # Ollama streams unless told "stream": false
    if api is Api.TGI_GENERATE:
        return path.split("?", 1)[0].rstrip("/").endswith("/generate_stream")
    return False


def parse_request_body(api: Api, body: bytes, *, path: str = "") -> RequestInfo:
    """Read a request body; ``path`` is only needed to tell TGI ``/generate_stream``."""
    default_stream = _default_stream(api, path)
    route_decides = api is Api.TGI_GENERATE and bool(path)  # TGI streams by route, not body
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return _scan(body, default_stream, route_decides)
    if not isinstance(doc, dict):
        return RequestInfo(stream=default_stream)

    model = doc.get("model")
    stream_value = doc.get("stream")
    if route_decides:
        stream = default_stream
    elif isinstance(stream_value, bool):
        stream = stream_value
    else:
        stream = default_stream

    options = doc.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    n = doc.get("n")
    return RequestInfo(
        model=clean_text(model, MODEL_LIMIT) if isinstance(model, str) and model else None,
        stream=stream,
        include_usage=include_usage,
        n=n if type(n) is int and n >= 1 else 1,
    )


def _scan(body: bytes, default_stream: bool, route_decides: bool) -> RequestInfo:
    head = body[:SCAN_LIMIT]
    m = _MODEL_RE.search(head)
    model = clean_text(m.group(1).decode("utf-8", "replace"), MODEL_LIMIT) if m else None
    stream = default_stream
    if not route_decides:
        s = _STREAM_RE.search(head)
        if s:
            stream = s.group(1) == b"true"
    return RequestInfo(model=model or None, stream=stream)
