"""Pure stream parsing and per-request timing for the proxy.

Nothing here does I/O, touches asyncio or Prometheus. The proxy feeds the upstream's raw
response bytes to a parser (``parsers.parser_for``) chunk by chunk and gets back
``Observation`` values, which ``timing.RequestMeter`` turns into one ``RequestRecord`` per
request; the bulk of a stream (chunks of plain output events) comes as a count instead
(``feed_outputs``, ``RequestMeter.outputs``). Parsers only observe: they never alter or
hold back bytes, and they never raise on any input (they observe less).
"""
