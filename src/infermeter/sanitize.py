"""Make client-chosen text safe to become a label value or a log field. Pure functions.

A label value must be valid UTF-8 when the exposition is encoded: a lone surrogate from a
JSON escape (``"\\ud800"``) would make every later scrape fail. Control characters would
break log lines and confuse readers of the exposition. Both are replaced at the point a
value is created, so nothing downstream has to care.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
# C0 and C1 controls, DEL, lone surrogates, and the line/paragraph separators that some
# log viewers treat as line breaks.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
#: Most characters of a client-chosen value a log field keeps.
LOG_VALUE_LIMIT = 1024


def clean_text(value: str, limit: int) -> str:
    """`value` cut to `limit` characters, unsafe characters replaced by U+FFFD."""
    value = value[:limit]
    return _UNSAFE.sub(REPLACEMENT, value) if _UNSAFE.search(value) else value


def clip(value: str, limit: int = LOG_VALUE_LIMIT) -> str:
    """A log value no longer than `limit` characters, saying how much was cut."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}...[{len(value) - limit} more characters]"
