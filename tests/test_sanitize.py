"""Client-chosen text made safe for labels and log lines."""

from __future__ import annotations

import logging

from infermeter.logs import ClipValues
from infermeter.sanitize import LOG_VALUE_LIMIT, clean_text, clip


def test_clean_text_replaces_surrogates_and_controls_and_cuts() -> None:
    assert clean_text("\ud800ok\udfff", 10) == "\ufffdok\ufffd"
    assert clean_text("a\x00b\nc\x7fd\x9fe\u2028", 20) == "a\ufffdb\ufffdc\ufffdd\ufffde\ufffd"
    assert clean_text("日本語-model", 3) == "日本語"
    clean_text("\ud800" * 5, 5).encode("utf-8")  # encodable


def test_clip_says_how_much_was_cut() -> None:
    assert clip("short") == "short"
    long = "v" * (LOG_VALUE_LIMIT + 500)
    assert clip(long) == "v" * LOG_VALUE_LIMIT + "...[500 more characters]"


def test_log_filter_cuts_messages_and_fields() -> None:
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "header %s", ("h" * 100_000,), None)
    record.field = "f" * 100_000
    assert ClipValues().filter(record)
    assert len(record.getMessage()) < LOG_VALUE_LIMIT + 100
    assert len(record.field) < LOG_VALUE_LIMIT + 100
