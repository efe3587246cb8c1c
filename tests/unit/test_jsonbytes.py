"""Compact JSON bytes: whatever the fast encoder refuses still comes out, and reads back as it went in."""
from __future__ import annotations

import json

import pytest

from gcl_orchestrator import jsonbytes


@pytest.mark.parametrize("doc", [
    {"computation": "c", "error": "undecodable \udcff byte"},  # a lone surrogate, as surrogateescape leaves
    {"computation": "é", "at": 1.5, "inputs": ["a", "b"], "n": None},
    [{"k": [1, 2]}, {"k": []}],
])
def test_what_is_written_reads_back_the_same(doc):
    body = jsonbytes.dumps(doc)
    assert isinstance(body, bytes) and b", " not in body and b": " not in body
    assert jsonbytes.loads(body) == doc and json.loads(body) == doc


def test_an_integer_beyond_64_bits_is_written_exactly():
    assert json.loads(jsonbytes.dumps({"n": 2 ** 70})) == {"n": 2 ** 70}


def test_a_key_that_is_not_a_string_is_written_as_the_standard_encoder_writes_it():
    assert json.loads(jsonbytes.dumps({1: "a"})) == {"1": "a"}


@pytest.mark.parametrize("body", [
    b'{"k":"\\udcff"}',  # an escaped lone surrogate
    json.dumps({"k": "\udcff"}, ensure_ascii=False).encode("utf-8", "surrogatepass"),  # as earlier journals wrote
    b"[1e400]",
    b'{"k": "\xc3\xa9", "n": [1, 2.5, null]}',
])
def test_what_the_fast_decoder_refuses_the_standard_one_reads(body):
    assert jsonbytes.loads(body) == json.loads(body)


def test_text_that_is_no_json_raises_the_standard_error():
    with pytest.raises(json.JSONDecodeError):
        jsonbytes.loads(b'{"k": ')
