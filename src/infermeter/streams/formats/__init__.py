"""One interpreter per wire format: turns one event's JSON into an Observation.

Interpreters know nothing of framing: the same one reads SSE events, NDJSON lines or a
whole JSON body, so framing and meaning are tested separately.
"""
