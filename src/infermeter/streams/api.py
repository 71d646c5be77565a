"""Which wire format a request speaks, from its path alone."""

from __future__ import annotations

from enum import StrEnum


class Api(StrEnum):
    """The ``api`` label values of design.md §4 (a closed list)."""

    CHAT_COMPLETIONS = "chat_completions"
    COMPLETIONS = "completions"
    RESPONSES = "responses"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    TGI_GENERATE = "tgi_generate"
    OLLAMA_GENERATE = "ollama_generate"
    OLLAMA_CHAT = "ollama_chat"
    OTHER = "other"


# Matched on the end of the path so that prefixes work: ``/v1/chat/completions``,
# ``/chat/completions``, Azure's ``/openai/deployments/<name>/chat/completions`` and
# gateways mounting a server under ``/<something>/``. Longest suffixes first.
_SUFFIXES: tuple[tuple[str, Api], ...] = (
    ("/chat/completions", Api.CHAT_COMPLETIONS),
    ("/api/generate", Api.OLLAMA_GENERATE),
    ("/api/chat", Api.OLLAMA_CHAT),
    ("/generate_stream", Api.TGI_GENERATE),
    ("/completions", Api.COMPLETIONS),
    ("/responses", Api.RESPONSES),
    ("/v1/messages", Api.ANTHROPIC_MESSAGES),
    ("/generate", Api.TGI_GENERATE),
)


def api_for_path(path: str) -> Api:
    """Classify a request target; anything unrecognised is ``Api.OTHER`` (still proxied).

    Accepts origin-form (``/v1/chat/completions?x=1``) and absolute-form
    (``http://host/v1/chat/completions``) targets; a trailing slash is ignored.
    """
    cut = len(path)
    for sep in ("?", "#"):
        i = path.find(sep, 0, cut)
        if i >= 0:
            cut = i
    p = path[:cut]
    if "://" in p:
        slash = p.find("/", p.find("://") + 3)
        p = p[slash:] if slash >= 0 else "/"
    p = p.rstrip("/")
    if not p.startswith("/"):
        p = "/" + p
    if p == "/messages":
        return Api.ANTHROPIC_MESSAGES
    for suffix, api in _SUFFIXES:
        if p.endswith(suffix):
            return api
    return Api.OTHER
