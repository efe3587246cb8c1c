"""Compact JSON as bytes, for the documents the orchestrator writes and reads often or large (status parts,
the journal, the event stream).

It uses orjson: five to ten times the standard encoder's speed. Both encoders hold the interpreter for the
whole of one call, so a 10,000-item status part encoded by the standard one stalls the loop and the API for
tens of milliseconds. What orjson refuses goes through the standard encoder, escaped to ASCII, as the
standard library writes it: a lone surrogate (a key named by undecodable bytes) and an integer beyond 64 bits
read back as they were, a key that is not a string comes back a string. Reading is the same: what orjson cannot
read (a lone surrogate, escaped or as written by `surrogatepass`; an infinity) the standard decoder reads, and
text that is no JSON raises its `json.JSONDecodeError`.

Two differences from the standard library, neither met by what the orchestrator writes: orjson writes an
infinity or NaN as `null` (GCL refuses them where the orchestrator keeps numbers: delays, time-outs,
resources), and reads an integer beyond 64 bits as a float.
"""
from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(doc: Any) -> bytes:
    """`doc` as compact JSON (no spaces), UTF-8."""
    try:
        return orjson.dumps(doc)
    except orjson.JSONEncodeError:
        return json.dumps(doc, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """The value of one JSON text."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
