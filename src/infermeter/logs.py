"""Logging: one line per event, plain key=value or JSON, structured fields via `extra=`.

Messages are constant strings; variable parts go in fields, so log pipelines can group them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Literal, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from infermeter.sanitize import LOG_VALUE_LIMIT, clip

_STANDARD = frozenset(RESERVED_ATTRS) | {"message", "asctime", "taskName", "color_message"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class ClipValues(logging.Filter):
    """Cut long messages and fields: a library may log a client's 100 KB header whole
    (OpenTelemetry's baggage propagator does), and one request must not make a huge line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if len(message) > LOG_VALUE_LIMIT:
            record.msg, record.args = clip(message), None
        for key, value in _fields(record).items():
            if isinstance(value, str) and len(value) > LOG_VALUE_LIMIT:
                setattr(record, key, clip(value))
        return True


class PlainFormatter(logging.Formatter):
    """logfmt-style: `time level logger msg key=value ...` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}Z",
            record.levelname.lower(),
            record.name,
            _quote(record.getMessage()),
        ]
        parts.extend(f"{key}={_quote(value)}" for key, value in _fields(record).items())
        if record.exc_info:
            parts.append("exc=" + _quote(self.formatException(record.exc_info)))
        return " ".join(parts)


def make_handler(fmt: Literal["plain", "json"], stream: TextIO) -> logging.Handler:
    """The sidecar's log lines on `stream` (the tests' in-process sidecar writes a file)."""
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(PlainFormatter())
    handler.addFilter(ClipValues())
    return handler


def configure(fmt: Literal["plain", "json"], level: str) -> None:
    handler = make_handler(fmt, sys.stderr)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # One line per scrape would drown every other event.
    logging.getLogger("uvicorn.access").disabled = True
