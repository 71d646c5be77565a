"""Errors the proxy itself answers with: OpenAI-shaped JSON, so SDKs show the message."""

from __future__ import annotations

import json

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_body(status: int, error_type: str, message: str, upstream: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": error_type,
                "code": status,
                "upstream": upstream,
                "source": "infermeter",
            }
        }
    ).encode()


class ClientStreamAborted(Exception):
    """Raised after the response started, so the server cuts the client connection.

    A clean end would tell the client its truncated stream was complete; an abrupt close
    makes it see the truncation, as nginx does when an upstream resets mid-response.
    """


class HideAbortedStreams:
    """uvicorn logs every exception that ends a response as an application error; an
    abort we raise on purpose was already logged once, in our own words."""

    def filter(self, record: object) -> bool:
        exc_info = getattr(record, "exc_info", None)
        return not (exc_info and isinstance(exc_info[1], ClientStreamAborted))
