"""Process set-up shared by the supervisor and the proxy workers."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable

#: Used when the hard limit is unlimited (Linux refuses an unlimited soft limit).
FD_LIMIT_CAP = 1 << 20


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the new soft limit.

    Every proxied stream holds two sockets, so the soft limit of 1,024 that many systems
    start processes with would cap the proxy near 500 concurrent streams.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_LIMIT_CAP if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
