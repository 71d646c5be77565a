"""The streaming reverse proxy: the hot path that forwards inference traffic and times it."""
